//! Against a real Samba 4 Active Directory domain controller from the test kit (root only:
//! the DC binds the fixed LDAP ports on a loopback address of its own). Entries are written
//! with the DC's own tools (`ldbadd` on its database), read here over LDAP.

use mailferry_testkit::{AdUser, SambaConfig, SambaDc, SambaTls};

use super::*;

/// What an admin writes for Active Directory: the GUID as ID, the pre-Windows-2000 logon name
/// as login, `mail` as primary and `proxyAddresses` for the aliases; only enabled user
/// accounts (a contact or a group has an address too, but no mailbox to migrate).
const AD_FILTER: &str = "(&(objectCategory=person)(objectClass=user)\
                         (!(userAccountControl:1.2.840.113556.1.4.803:=2)))";

fn ad_settings(dc: &SambaDc, base: &str) -> LdapSettings {
    LdapSettings {
        url: dc.ldaps_url(),
        security: DirectorySecurity::Tls,
        tls_ca: Some(dc.ca_pem()),
        tls_pin_sha256: Vec::new(),
        bind_dn: dc.admin_dn(),
        bind_password: dc.admin_password().into(),
        base: base.into(),
        filter: AD_FILTER.into(),
        id_attribute: "objectGUID".into(),
        login_attribute: "sAMAccountName".into(),
        primary_address_attribute: "mail".into(),
        alias_attribute: Some("proxyAddresses".into()),
        display_name_attribute: Some("displayName".into()),
    }
}

fn user(name: &str, display: &str, proxies: &[&str]) -> AdUser {
    AdUser {
        name: name.into(),
        display_name: display.into(),
        mail: proxies
            .iter()
            .find_map(|p| p.strip_prefix("SMTP:"))
            .map(str::to_string),
        proxy_addresses: proxies.iter().map(|p| p.to_string()).collect(),
        password: Some(format!("Pw-{name}-1!")),
        ..AdUser::default()
    }
}

#[test]
fn active_directory_is_read_as_ad_tools_show_it() {
    let dc = SambaDc::start(SambaConfig::new("old.test", "OLD"));
    let ou = dc.add_ou("Staff");
    let alice = dc.add_user(
        &ou,
        &user(
            "alice",
            "Alice Old",
            &[
                "SMTP:Alice.Old@Old.Test",
                "smtp:alice@old.test",
                "smtp:a.old@legacy.test",
                "X500:/o=Old/ou=Exchange/cn=Recipients/cn=alice",
                "SIP:alice@old.test",
            ],
        ),
    );
    let bob = dc.add_user(&ou, &user("bob", "Bob Old", &["SMTP:bob@old.test"]));
    // Left out by the filter: a disabled account, a contact and a group with addresses.
    dc.add_user(
        &ou,
        &AdUser {
            disabled: true,
            ..user("carol", "Carol Gone", &["SMTP:carol@old.test"])
        },
    );
    dc.add_contact(&ou, "partner", "partner@elsewhere.test");
    dc.add_group(&ou, "sales", "sales@old.test");

    // LDAPS, bound as a DN, the DC's certificate verified through tls_ca.
    let s = ad_settings(&dc, &ou);
    let mut d = LdapDirectory::connect(&s).unwrap();
    let mut listed = d.list().unwrap();
    listed.sort_by(|a, b| a.login.cmp(&b.login));
    let alice_guid = dc.object_guid(&alice);
    let bob_guid = dc.object_guid(&bob);
    assert_eq!(
        listed,
        vec![
            DirectoryMailbox {
                id: MailboxId::new(alice_guid.clone()),
                dn: alice.clone(),
                login: "alice".into(),
                // SMTP: first, then the smtp: aliases; X500: and SIP: are not mail addresses
                addresses: vec![
                    "Alice.Old@old.test".into(),
                    "alice@old.test".into(),
                    "a.old@legacy.test".into()
                ],
                display_name: Some("Alice Old".into()),
            },
            DirectoryMailbox {
                id: MailboxId::new(bob_guid.clone()),
                dn: bob.clone(),
                login: "bob".into(),
                addresses: vec!["bob@old.test".into()],
                display_name: Some("Bob Old".into()),
            },
        ]
    );
    // Looked up again by the GUID string, and found by any of its addresses.
    let found = d.lookup(&alice_guid).unwrap().expect("alice by objectGUID");
    assert_eq!(found.dn, alice);
    let by_alias = d.find_by_address("A.Old@LEGACY.test").unwrap();
    assert_eq!(by_alias.iter().map(|m| &m.dn).collect::<Vec<_>>(), [&alice]);
    assert!(d.find_by_address("carol@old.test").unwrap().is_empty());
    assert!(
        d.find_by_address("partner@elsewhere.test")
            .unwrap()
            .is_empty()
    );
    drop(d);

    // StartTLS, bound with a UPN, userPrincipalName as the login.
    let upn = LdapSettings {
        url: dc.url(),
        security: DirectorySecurity::StartTls,
        bind_dn: dc.admin_upn(),
        login_attribute: "userPrincipalName".into(),
        ..s.clone()
    };
    let logins: Vec<String> = LdapDirectory::connect(&upn)
        .unwrap()
        .list()
        .unwrap()
        .into_iter()
        .map(|m| m.login)
        .collect();
    assert_eq!(logins.len(), 2);
    assert!(logins.contains(&"alice@old.test".to_string()), "{logins:?}");

    // A user's own bind works too (simple bind by UPN); a wrong password is AD's words.
    let as_bob = LdapSettings {
        bind_dn: "bob@old.test".into(),
        bind_password: "Pw-bob-1!".into(),
        ..s.clone()
    };
    LdapDirectory::connect(&as_bob).unwrap();
    let err = LdapDirectory::connect(&LdapSettings {
        bind_password: "wrong".into(),
        ..as_bob
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "Directory {}: bind as bob@old.test failed: invalidCredentials (49)",
            dc.ldaps_url()
        )) && text.contains("AcceptSecurityContext error, data 52e"),
        "{text}"
    );

    // A simple bind over plain LDAP: AD (and Samba's default) demand TLS, in their words.
    let err = LdapDirectory::connect(&LdapSettings {
        url: dc.url(),
        security: DirectorySecurity::Plain,
        tls_ca: None,
        ..s.clone()
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "Directory {}: bind as {} failed: strongerAuthRequired (8)",
            dc.url(),
            dc.admin_dn()
        )) && text.contains("Transport encryption required"),
        "{text}"
    );

    // check's probe: the sample reads as mailboxes; a wrong attribute name shows in it.
    let probe = LdapDirectory::connect(&s).unwrap().probe().unwrap();
    assert_eq!(
        probe,
        DirectoryProbe {
            sampled: 2,
            mailboxes: 2,
            skipped: vec![],
            more: false
        }
    );
    let probe = LdapDirectory::connect(&LdapSettings {
        id_attribute: "objectGUIDx".into(),
        ..s.clone()
    })
    .unwrap()
    .probe()
    .unwrap();
    assert_eq!((probe.sampled, probe.mailboxes), (2, 0));
    assert!(
        probe.skipped[0].ends_with(": skipped: no objectGUIDx"),
        "{probe:?}"
    );

    // A wrong base is the server's noSuchObject, not an empty directory.
    let err = LdapDirectory::connect(&LdapSettings {
        base: format!("OU=Nowhere,{}", dc.base_dn()),
        ..s.clone()
    })
    .unwrap()
    .probe()
    .unwrap_err();
    assert!(err.to_string().contains("noSuchObject (32)"), "{err}");
}

#[test]
fn more_users_than_ad_returns_in_one_page_are_all_listed() {
    let dc = SambaDc::start(SambaConfig::new("big.test", "BIG"));
    let ou = dc.add_ou("Many");
    let ldif: String = (0..1100)
        .map(|i| {
            let name = format!("user{i:04}");
            dc.user_ldif(
                &ou,
                &AdUser {
                    // no password: accounts AD makes disabled, so the filter here is on mail
                    ..user(
                        &name,
                        &format!("User {i}"),
                        &[&format!("SMTP:{name}@big.test")],
                    )
                },
            )
            .replace("unicodePwd", "description")
            .replace("userAccountControl: 512\n", "")
        })
        .collect();
    dc.add(&ldif);
    let s = LdapSettings {
        filter: "(&(objectClass=user)(mail=*))".into(),
        ..ad_settings(&dc, &ou)
    };
    let listed = LdapDirectory::connect(&s).unwrap().list().unwrap();
    assert_eq!(listed.len(), 1100);
    let logins: std::collections::HashSet<_> = listed.iter().map(|m| m.login.as_str()).collect();
    assert_eq!(logins.len(), 1100);
    assert!(logins.contains("user0000") && logins.contains("user1099"));
}

#[test]
fn samba_own_certificate_is_refused_saying_why_and_accepted_when_pinned() {
    let mut cfg = SambaConfig::new("pin.test", "PIN");
    cfg.tls = SambaTls::AutoGenerated;
    let dc = SambaDc::start(cfg);
    let fp = mailferry_testkit::openssl_fingerprint(&dc.cert_pem());
    let host = dc.host();
    for (url, security) in [
        (dc.ldaps_url(), DirectorySecurity::Tls),
        (dc.url(), DirectorySecurity::StartTls),
    ] {
        let s = LdapSettings {
            url: url.clone(),
            security,
            ..ad_settings(&dc, &dc.users_dn())
        };
        // Its own CA signed it, but it names the host only in its CN.
        let err = LdapDirectory::connect(&s).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Cannot connect to directory {url}: the certificate of {host} names the host \
                 only in its CN (CN=DC1.pin.test), with no subjectAltName: name verification \
                 reads only the subjectAltName (RFC 6125), so the certificate is refused. Its \
                 SHA-256 fingerprint is {fp}; if that is the server's certificate (compare with \
                 `openssl x509 -noout -fingerprint -sha256 -in CERT` on the server), \
                 tls_pin_sha256 = \"{fp}\" accepts exactly that certificate for this connection"
            )
        );
        let pin = mailferry_core::job::CertificatePin::parse(&fp).unwrap();
        let pinned = LdapSettings {
            tls_ca: None,
            tls_pin_sha256: vec![pin],
            ..s.clone()
        };
        let mut d = LdapDirectory::connect(&pinned).unwrap();
        // Administrator has no mail: the listing is empty but the bind and search worked.
        assert!(d.find_by_address("nobody@pin.test").unwrap().is_empty());
        drop(d);
        let mut wrong = pin;
        wrong.0[0] ^= 0x80;
        let err = LdapDirectory::connect(&LdapSettings {
            tls_pin_sha256: vec![wrong],
            ..pinned
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Cannot connect to directory {url}: the certificate of {host} has the SHA-256 \
                 fingerprint {fp}, not the one tls_pin_sha256 names"
            )
        );
    }
}

#[test]
fn a_mailbox_created_in_ad_is_an_enabled_user_with_its_password_and_addresses() {
    let dc = SambaDc::start(SambaConfig::new("new.test", "NEW"));
    let ou = dc.add_ou("Migrated");
    let s = ad_settings(&dc, &ou);
    let mut d = LdapDirectory::connect(&s).unwrap();
    let new = NewMailbox {
        base: ou.clone(),
        login: "alice".into(),
        address: "alice@new.test".into(),
        display_name: Some("Alice New".into()),
        object_classes: vec![
            "top".into(),
            "person".into(),
            "organizationalPerson".into(),
            "user".into(),
        ],
        password: Some("Initial-Pw-2026!".into()),
    };
    let created = d.add_mailbox(&new).unwrap();
    let dn = format!("CN=Alice New,{ou}");
    assert_eq!(
        created,
        DirectoryMailbox {
            id: MailboxId::new(dc.object_guid(&dn)),
            dn: dn.clone(),
            login: "alice".into(),
            addresses: vec!["alice@new.test".into()],
            display_name: Some("Alice New".into()),
        }
    );
    let text = dc.ldbsearch(
        &ou,
        "(sAMAccountName=alice)",
        &[
            "userAccountControl",
            "userPrincipalName",
            "proxyAddresses",
            "mail",
        ],
    );
    for expected in [
        "userAccountControl: 512",
        "userPrincipalName: alice@new.test",
        "proxyAddresses: SMTP:alice@new.test",
        "mail: alice@new.test",
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
    // The password works: the new user binds.
    LdapDirectory::connect(&LdapSettings {
        bind_dn: "alice@new.test".into(),
        bind_password: "Initial-Pw-2026!".into(),
        ..s.clone()
    })
    .unwrap();

    // Refused creations in AD's words: the same name again, and a password the policy refuses.
    let err = d.add_mailbox(&new).unwrap_err();
    assert!(err.to_string().contains("entryAlreadyExists (68)"), "{err}");
    let err = d
        .add_mailbox(&NewMailbox {
            login: "bob".into(),
            address: "bob@new.test".into(),
            display_name: Some("Bob New".into()),
            password: Some("short".into()),
            ..new.clone()
        })
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "Directory {}: add CN=Bob New,{ou} failed: constraintViolation (19)",
            dc.ldaps_url()
        )),
        "{text}"
    );
    // Nothing was left behind by the refused creation.
    assert!(
        !dc.ldbsearch(&ou, "(sAMAccountName=bob)", &["dn"])
            .contains("dn: ")
    );
}

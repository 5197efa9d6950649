//! The test kit's Samba AD DC: provisioned, answering LDAP, holding what the helpers write.

use mailferry_testkit::{AdUser, SambaConfig, SambaDc};

#[test]
fn a_provisioned_dc_answers_ldap_and_holds_users_contacts_and_groups() {
    let dc = SambaDc::start(SambaConfig::new("old.test", "OLD"));
    eprintln!(
        "samba: provisioned in {:.1} s, ready {:.1} s later, on {}",
        dc.provision_time.as_secs_f64(),
        dc.start_time.as_secs_f64(),
        dc.host()
    );
    assert_eq!(dc.base_dn(), "DC=old,DC=test");
    let ou = dc.add_ou("Staff");
    let alice = dc.add_user(
        &ou,
        &AdUser {
            name: "alice".into(),
            display_name: "Alice Old".into(),
            mail: Some("alice@old.test".into()),
            proxy_addresses: vec![
                "SMTP:alice@old.test".into(),
                "smtp:a.old@old.test".into(),
                "X500:/o=Old/cn=alice".into(),
            ],
            password: Some("Pw-alice-1!".into()),
            ..AdUser::default()
        },
    );
    dc.add_contact(&ou, "partner", "partner@elsewhere.test");
    dc.add_group(&ou, "sales", "sales@old.test");
    let guid = dc.object_guid(&alice);
    assert_eq!(guid.len(), 36, "{guid}");
    let text = dc.ldbsearch(
        &ou,
        "(sAMAccountName=alice)",
        &["userAccountControl", "userPrincipalName"],
    );
    assert!(text.contains("userAccountControl: 512"), "{text}");
    assert!(text.contains("userPrincipalName: alice@old.test"), "{text}");

    assert_eq!(dc.switch_domain(&ou, "old.test", "new.test"), 1);
    let text = dc.ldbsearch(&ou, "(sAMAccountName=alice)", &["proxyAddresses", "mail"]);
    for expected in [
        "proxyAddresses: SMTP:alice@new.test",
        "proxyAddresses: smtp:alice@old.test",
        "proxyAddresses: smtp:a.old@old.test",
        "proxyAddresses: X500:/o=Old/cn=alice",
        "mail: alice@new.test",
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
    // A simple bind as the user, by UPN, over LDAPS with the test kit's CA.
    let out = std::process::Command::new("ldapsearch")
        .env("LDAPTLS_CACERT", dc.ca_pem())
        .args([
            "-x",
            "-LLL",
            "-H",
            &dc.ldaps_url(),
            "-D",
            "alice@old.test",
            "-w",
            "Pw-alice-1!",
        ])
        .args(["-b", &ou, "(sAMAccountName=alice)", "sAMAccountName"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sAMAccountName: alice"),
        "{out:?}"
    );
    // A wrong password is refused.
    let out = std::process::Command::new("ldapsearch")
        .env("LDAPTLS_CACERT", dc.ca_pem())
        .args([
            "-x",
            "-H",
            &dc.ldaps_url(),
            "-D",
            "alice@old.test",
            "-w",
            "wrong",
        ])
        .args(["-b", &ou, "(sAMAccountName=alice)"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Invalid credentials (49)"),
        "{out:?}"
    );
}

#[test]
fn a_dovecot_finds_its_users_in_active_directory_and_checks_passwords_by_binding() {
    use mailferry_testkit::{Dovecot, DovecotConfig, LdapUsers};
    let dc = SambaDc::start(SambaConfig::new("new.test", "NEW"));
    let ou = dc.add_ou("Mail");
    dc.add_user(
        &ou,
        &AdUser {
            name: "amy".into(),
            mail: Some("amy@new.test".into()),
            password: Some("Pw-amy-1!".into()),
            ..AdUser::default()
        },
    );
    let mut cfg = DovecotConfig::new(&[]);
    cfg.ldap_users = Some(LdapUsers::from_samba(&dc, &ou));
    let server = Dovecot::start(cfg);
    let auth = |user: &str, pass: &str| {
        let out = server.doveadm(&["auth", "test", user, pass]);
        (
            out.status.success(),
            format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                server.log_tail(20)
            ),
        )
    };
    let (ok, text) = auth("amy", "Pw-amy-1!");
    assert!(ok, "amy with her AD password: {text}");
    let (ok, text) = auth("amy", "wrong");
    assert!(!ok, "a wrong password: {text}");
    let (ok, text) = auth("amy*admin", "adminpass");
    assert!(ok, "master login as amy: {text}");
    // A master login needs the userdb lookup, which knows only the directory's users.
    let user = server.doveadm(&["user", "nobody"]);
    assert!(!user.status.success(), "nobody is no user");
    let user = server.doveadm(&["user", "amy"]);
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
}
